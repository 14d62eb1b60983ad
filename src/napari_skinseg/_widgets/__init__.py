"""napari dock widgets: thin Qt/magicgui layers over the Qt-free core."""
