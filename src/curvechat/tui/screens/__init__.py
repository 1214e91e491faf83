"""The app's screens: first-run setup, the chat, dialogs."""
