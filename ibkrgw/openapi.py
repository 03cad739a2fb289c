"""OpenAPI components shared by every app's API (kept apart from the URL list to avoid import cycles)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
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


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Documents `Authorization: Api-Key <key>` as the API's security scheme."""

    target_class = "ibkrgw.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`; create keys in the admin or with `manage.py apikey create`.",
        }
