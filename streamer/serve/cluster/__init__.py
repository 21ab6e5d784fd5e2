"""Scaling out on Ray Serve: the call gateway, its FastAPI ingress and ASGI bridge, the model
deployments and the driver."""
