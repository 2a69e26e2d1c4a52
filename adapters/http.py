"""``http``: POSTs the signed envelope to the agency's endpoint.

2xx is delivered; 408, 425, 429, 5xx, time-outs and connection errors are retried; any other
status is a permanent failure that keeps the partner's own answer as the error. Each request
carries ``X-Message-Id`` and ``X-Sender`` so the receiver can recognise a redelivery.
"""

from __future__ import annotations

import httpx

from .base import Adapter, AdapterSettings, Delivery, Outcome, Result

from hub.config import Agency

RETRYABLE = frozenset({408, 425, 429})


class HttpAdapter(Adapter):
    alias = "http"

    def __init__(self, agency: Agency, settings: AdapterSettings) -> None:
        super().__init__(agency, settings)
        timeout = float(agency.options.get("timeout", settings.timeout))
        self._client = httpx.Client(timeout=timeout, headers={"Content-Type": "application/xml"}, trust_env=False)

    def request_headers(self, delivery: Delivery) -> dict[str, str]:
        """Headers of one delivery's POST (``webhook`` adds its signature)."""
        return {"X-Message-Id": delivery.message_id, "X-Sender": delivery.sender}

    def deliver(self, delivery: Delivery) -> Result:
        headers = self.request_headers(delivery)
        try:
            response = self._client.post(self.agency.endpoint, content=delivery.payload, headers=headers)
        except httpx.TimeoutException as exc:
            return Result(Outcome.RETRY, f"time-out talking to {self.agency.endpoint}: {type(exc).__name__}")
        except httpx.TransportError as exc:
            return Result(Outcome.RETRY, f"cannot reach {self.agency.endpoint}: {exc}")
        status = response.status_code
        text = response.text[:500].strip()
        if 200 <= status < 300:
            return Result(Outcome.DELIVERED, f"HTTP {status}")
        if status >= 500 or status in RETRYABLE:
            return Result(Outcome.RETRY, f"HTTP {status}: {text}")
        return Result(Outcome.FAILED, f"HTTP {status}: {text}")

    def check(self) -> list[str]:
        if not self.agency.endpoint.startswith(("http://", "https://")):
            return [f"endpoint: {self.agency.endpoint!r} is not an http(s) URL"]
        return []

    def close(self) -> None:
        self._client.close()
