"""REST door for the audit log (read-only)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets

from audit.chain import HASHED_FIELDS
from audit.models import AuditEntry
from audit.selectors import audit_list
from ibkrgw.openapi import ERROR
from ibkrgw.web.listing import ListQuery


class AuditEntryOutput(serializers.ModelSerializer):
    class Meta:
        model = AuditEntry
        # Everything the hash covers, and the hash: a client can verify the chain from this alone.
        fields = [*HASHED_FIELDS, "entry_hash"]


class AuditListQuery(ListQuery):
    correlation_id = serializers.CharField(max_length=64, required=False)
    event = serializers.CharField(max_length=64, required=False)
    target_type = serializers.CharField(max_length=32, required=False)
    target_id = serializers.CharField(max_length=64, required=False)


class AuditEntryViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = AuditEntryOutput

    def get_queryset(self):
        query = AuditListQuery(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        return audit_list(**query.filters()).order_by("-seq")

    @extend_schema(
        parameters=[AuditListQuery],
        responses={200: AuditEntryOutput(many=True), 400: ERROR},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)
