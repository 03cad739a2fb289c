"""REST door for the audit log (read-only)."""

from __future__ import annotations

from django.db import models
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.chain import HASHED_FIELDS
from audit.models import AuditEntry
from audit.readable import UNREADABLE_ERRORS, unreadable_error
from audit.selectors import audit_list
from audit.verify import ledger_head
from ibkrgw.openapi import ERROR
from ibkrgw.web.listing import ListQuery
from ibkrgw.web.serializers import LedgerJSONField


class AuditEntryOutput(serializers.ModelSerializer):
    # `data` as every ledger JSON column: one holding a number JSON cannot carry names its row.
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.JSONField: LedgerJSONField,
    }

    class Meta:
        model = AuditEntry
        # Everything the hash covers, and the hash: a client can verify the chain from this alone.
        fields = [*HASHED_FIELDS, "entry_hash"]


class AuditListQuery(ListQuery):
    correlation_id = serializers.CharField(max_length=64, required=False)
    event = serializers.CharField(max_length=64, required=False)
    target_type = serializers.CharField(max_length=32, required=False)
    target_id = serializers.CharField(max_length=64, required=False)


class LedgerList(mixins.ListModelMixin, viewsets.GenericViewSet):
    """A page of ledger rows; a row on it that cannot be read as sealed answers 409 ledger_unreadable naming it
    (a page short of a row would pass for complete)."""

    def list(self, request, *args, **kwargs):
        try:
            return super().list(request, *args, **kwargs)
        except UNREADABLE_ERRORS as exc:
            start, limit = getattr(self.paginator, "offset", None), getattr(self.paginator, "limit", None)
            if start is None or limit is None:  # failed before paging: not a ledger row's doing
                raise
            raise unreadable_error(self.get_queryset(), exc, start=start, stop=start + limit) from exc


class AuditEntryViewSet(LedgerList):
    serializer_class = AuditEntryOutput

    def get_queryset(self):
        query = AuditListQuery(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        return audit_list(**query.filters()).order_by("-seq")

    @extend_schema(
        parameters=[AuditListQuery],
        responses={200: AuditEntryOutput(many=True), 400: ERROR, 409: ERROR},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class LedgerHeadOutput(serializers.Serializer):
    seq = serializers.IntegerField(help_text="The newest seal's seq (0 for an empty ledger).")
    sha256 = serializers.CharField(allow_null=True, help_text="Its hash; null for an empty ledger.")


class LedgerHeadView(APIView):
    @extend_schema(
        responses={200: LedgerHeadOutput},
        description="The head of the ledger's seal chain. Keep copies of it outside this machine (a monitor "
        "polling this endpoint will do): `manage.py audit_verify --anchor SEQ:SHA256` then proves that "
        "nothing up to it was rewritten or removed since.",
    )
    def get(self, request: Request) -> Response:
        head = ledger_head()
        return Response({"seq": head.seq if head else 0, "sha256": head.hash if head else None})
