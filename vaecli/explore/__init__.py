"""`vae explore`'s library: one local web page to drag, click and draw through a model's latent space.

The HTTP side (server.py, routes.py, inputs.py, assets.py, facts.py, app.py) uses the standard library alone, so
the page is served before torch is imported; state.py (the loaded model) and atlas.py (the test set's map and
KL) hold the torch work; page/ is the page itself, served from the package.
"""
