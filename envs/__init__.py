"""Environment suites, one sub-package each; plain gymnasium environments that know nothing
of preferences (ground-truth rewards travel in `reward` and `info`)."""
