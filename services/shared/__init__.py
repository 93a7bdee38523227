"""What the Parley services really share: settings base, auth, wire models, errors, internal HTTP."""
