"""slmserve on Ray Serve: a gateway deployment serving the same FastAPI app as one process, and one model-host
deployment per model whose replicas each own an engine. The only package that imports ray (slmserve[cluster])."""
