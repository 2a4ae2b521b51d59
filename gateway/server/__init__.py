"""The gateway's two grpc.aio listeners (local API and peer API) and their guards."""
