"""Service scaffolding: settings, app factory, error mapping, logging, JWT verification."""
