"""What several test files share: small configs and models, corpora and tables written on the fly, runs of the
command line. Fixtures stay in conftest.py; everything a test imports by name lives here."""
