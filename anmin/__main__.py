from anmin.cli import app

app()
