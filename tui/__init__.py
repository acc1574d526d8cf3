"""The terminal front end of ftui: the CLI and the Textual dashboard."""
