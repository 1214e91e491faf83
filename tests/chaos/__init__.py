"""Fault injection for curvechat (issue 7): see README.md beside this file."""
