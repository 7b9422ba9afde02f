"""Moved to gearsight.image.decode; this old path stays one release (README, "Moved modules")."""
from gearsight._moved import alias

alias(__name__, "gearsight.image.decode")
