from slmserve.cli import app

app()
