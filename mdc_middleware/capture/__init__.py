"""The request path: ASGI and WSGI middleware, routes, and what each request captures."""
