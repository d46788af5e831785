from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from orchestration.api.permissions import PublicEndpoint


class LivenessView(APIView):
    """Public liveness probe: the web process answers."""

    authentication_classes: list = []
    permission_classes = [PublicEndpoint]
    throttle_classes: list = []

    @extend_schema(responses={200: inline_serializer("Liveness", {"status": serializers.CharField()})}, auth=[])
    def get(self, request):
        return Response({"status": "ok", "service": "orchestrator"})
