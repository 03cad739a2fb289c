"""Admin for API keys: create (the key is shown once, by the library), list, revoke. Never delete. And the
users' admin, showing whether each account matches its MAC and refusing to save one that does not.

Creating and revoking write an audit entry in the admin's own transaction.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from audit.admin import DeclaredLookupsOnly
from audit.stored import UNREADABLE_ERRORS
from ibkrgw.actors import Source
from ibkrgw.apikeys import (
    apikey_created_record,
    apikey_revoke,
    apikey_revoked_record,
    prefix_of,
    unreadable_key_problem,
)
from ibkrgw.auth import actor_for
from ibkrgw.models import ScopedAPIKey
from ibkrgw.users import RESEALING_REFUSED, user_distrust, user_resealing_refused


def _unreadable_key_message(pk: str, exc: Exception) -> str:
    return (
        f"API key {prefix_of(pk)}: {unreadable_key_problem(exc)}; the gateway refuses it. Run manage.py audit_verify."
    )


class KeyChangeList(ChangeList):
    """The key list shows every key it can read and names above it each one it cannot (a value written into
    the database that the gateway never writes), instead of failing the whole page."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        try:
            self.result_list = list(self.result_list)
        except UNREADABLE_ERRORS:
            rows: list[ScopedAPIKey] = []
            for pk in self.result_list.values_list("pk", flat=True):
                try:
                    rows.extend(self.queryset.filter(pk=pk))
                except UNREADABLE_ERRORS as exc:
                    messages.error(request, _unreadable_key_message(pk, exc))
            self.result_list = rows


@admin.register(ScopedAPIKey)
class ScopedAPIKeyAdmin(DeclaredLookupsOnly, APIKeyModelAdmin):
    # The library's stubs type its own six columns as a fixed-length tuple.
    list_display = ("prefix", "name", "scope", "created", "expiry_date", "_has_expired", "revoked", "mac_ok")  # type: ignore[assignment]
    list_filter = ("scope", "revoked", "created")
    fields = ("prefix", "name", "scope", "expiry_date", "revoked")
    actions = ("revoke_selected",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is None:
            return fields
        # A key's scope, name and expiry are fixed once it exists: make a new key instead of widening an
        # old one (a later expiry would bring an expired key back to life). Revoking is the only change.
        return fields + tuple(name for name in ("name", "scope", "expiry_date") if name not in fields)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return KeyChangeList

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        try:
            # Django's own read would report an unreadable row as deleted: read it here first to say what it is.
            self.get_queryset(request).filter(pk=unquote(object_id)).first()
            response = super().change_view(request, object_id, form_url, extra_context)
            if isinstance(response, TemplateResponse):
                response.render()  # here, so that a value read while rendering fails here too
        except UNREADABLE_ERRORS as exc:
            messages.error(request, _unreadable_key_message(unquote(object_id), exc))
            return redirect(reverse("admin:ibkrgw_scopedapikey_changelist", current_app=self.admin_site.name))
        return response

    @admin.display(boolean=True, description="MAC ok")
    def mac_ok(self, obj: ScopedAPIKey) -> bool:
        """False: the row was changed outside the gateway; the gateway refuses the key (audit_verify names it)."""
        return obj.row_intact()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoke instead: the audit log keeps referring to the key's prefix.
        return False

    def save_model(self, request: HttpRequest, obj: ScopedAPIKey, form: Any = None, change: bool = False) -> None:
        # ModelAdmin.changeform_view already runs this inside a transaction, which the audit entry joins.
        revoking = change and obj.revoked and not obj._initial_revoked
        super().save_model(request, obj, form, change)
        actor = actor_for(request.user, None, Source.ADMIN)
        if not change:
            apikey_created_record(obj, actor)
        elif revoking:
            apikey_revoked_record(obj, actor)

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ScopedAPIKey]):
        keys = list(queryset.filter(revoked=False))
        if not request.POST.get("confirmed"):
            context = {
                **self.admin_site.each_context(request),
                "title": "Revoke API keys: are you sure?",
                "keys": keys,
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/ibkrgw/scopedapikey/revoke_confirm.html", context)
        actor = actor_for(request.user, None, Source.ADMIN)
        # One revocation at a time through the service: a key revoked meanwhile elsewhere is neither revoked
        # nor audited twice.
        revoked = sum(apikey_revoke(prefix=key.prefix, actor=actor)[1] for key in keys)
        messages.success(request, f"{revoked} API key(s) revoked.")
        return None


# The library registers its own plain APIKey model; this project uses ScopedAPIKey only.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


# -- users: the admin of django.contrib.auth, with their MACs in sight (ibkrgw.users) ----------------------
class _RefusesChangedAccounts:
    """A form saving a user refuses, with a message instead of a failure, when the account was changed outside
    the gateway: saving would write a MAC over it. Deactivating it is the one change allowed."""

    instance: Any
    cleaned_data: dict
    refusal_field: str | None = None

    def clean(self) -> dict:
        cleaned = super().clean()  # type: ignore[misc]
        user = self.instance
        if user_resealing_refused(user.pk, active=cleaned.get("is_active", user.is_active)):
            # On the password page, under the field (that template shows no form-wide errors).
            self.add_error(self.refusal_field, ValidationError(RESEALING_REFUSED))  # type: ignore[attr-defined]
        return cleaned


class SealedUserChangeForm(_RefusesChangedAccounts, UserChangeForm):
    pass


class SealedPasswordChangeForm(_RefusesChangedAccounts, AdminPasswordChangeForm):
    refusal_field = "password1"

    @property
    def instance(self) -> Any:
        return self.user


class SealedUserAdmin(UserAdmin):
    form = SealedUserChangeForm
    change_password_form = SealedPasswordChangeForm
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "mac_ok")  # UserAdmin's, and the MAC

    @admin.display(boolean=True, description="MAC ok")
    def mac_ok(self, user: Any) -> bool:
        return user_distrust(user.pk) is None


if admin.site.is_registered(get_user_model()):
    admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), SealedUserAdmin)
