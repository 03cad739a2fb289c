"""OpenAPI components shared by every app's API (kept apart from the URL list to avoid import cycles)."""

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ERROR = OpenApiResponse(
    response=inline_serializer(
        name="Error",
        fields={
            "error": inline_serializer(
                name="ErrorBody",
                fields={
                    "code": serializers.CharField(help_text="Stable snake_case error code."),
                    "message": serializers.CharField(),
                    "details": serializers.DictField(),
                },
            )
        },
    ),
    description="Error with a stable code.",
)
