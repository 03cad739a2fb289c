"""The operator console's own reads, forms and pages, on top of Django's admin (see ibkrgw.admin_site)."""
