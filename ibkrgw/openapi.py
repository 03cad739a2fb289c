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


# Every operation can answer these; documenting them once here keeps each view's schema about itself.
COMMON_ERRORS = {
    "400": "Malformed request: invalid_request, with the offending fields in details.",
    "401": "Missing, unknown, expired or revoked API key: not_authenticated.",
    "403": "The key's scope or the user's role does not allow this: permission_denied.",
    "429": "Too many requests: throttled (or pacing_violation), with Retry-After.",
    "500": "Unexpected failure: internal_error. Nothing was half-written.",
}
# Request bodies that refuse unknown fields (a typo must never silently change an order).
STRICT_BODIES = ("OrderCreateInput", "OrderModifyInput", "TradingSwitchInput")


def postprocess_schema(result, generator, request, public):
    """drf-spectacular hook: shared error responses on every operation; strict request bodies."""
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in COMMON_ERRORS.items():
                if path.endswith("/health/") and code in ("401", "403"):
                    continue  # health needs no credentials
                responses.setdefault(code, {"description": description, "content": error_ref})
    for name in STRICT_BODIES:
        for variant in (name, f"{name}Request", f"Patched{name}"):
            component = result.get("components", {}).get("schemas", {}).get(variant)
            if component is not None:
                component["additionalProperties"] = False
    return result
