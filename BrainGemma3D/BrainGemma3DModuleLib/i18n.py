"""Slicer's translation function, with an English fallback for Slicer versions without ``slicer.i18n``."""

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer without translation support: show the English text

    def _(text):
        return text

    def translate(context, text):
        return text


__all__ = ["_", "translate"]
