"""Moved to gearsight.cntk.ctf.reader; this old path stays one release (README, "Moved modules")."""
from gearsight._moved import alias

alias(__name__, "gearsight.cntk.ctf.reader")
