"""Framework integrations, each imported only when asked for.

- ``fanwire.integrations.starlette``: :func:`create_subscription_app` and the
  Starlette :class:`~fanwire.WebSocketAdapter` (extra: ``fanwire[starlette]``).
- ``fanwire.integrations.fastapi``: ``SubscriptionRouterFactory.create`` for
  ``app.include_router`` (extra: ``fanwire[fastapi]``).
"""
