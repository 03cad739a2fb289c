from django.urls import path

from marketdata import api

urlpatterns = [
    path("contracts/", api.ContractListView.as_view(), name="contracts"),
    path("quotes/<str:symbol>/", api.QuoteView.as_view(), name="quote"),
    path("bars/<str:symbol>/", api.BarsView.as_view(), name="bars"),
]
