"""The side-by-side benchmark behind `python -m fracture.bench`: fracture against a plain Keras 3 port."""
