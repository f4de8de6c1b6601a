"""fracture's Hydra configs. Edit them here; the distribution installs this folder as the package `fracture.conf`."""
