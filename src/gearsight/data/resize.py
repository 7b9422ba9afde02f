"""Moved to gearsight.image.resize; this old path stays one release (README, "Moved modules")."""
from gearsight._moved import alias

alias(__name__, "gearsight.image.resize")
