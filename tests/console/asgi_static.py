"""The project's ASGI application with its static files served, for browser tests against daphne
(as `runserver` and Channels' live server do); production serves them through WhiteNoise."""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from ibkrgw.asgi import application as project_application

application = ASGIStaticFilesHandler(project_application)
