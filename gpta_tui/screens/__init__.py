"""The app's screens: sessions list, new-session form, run dashboard and modal dialogs."""
