"""Role-based access control by the caller's certificate Common Name.

:mod:`.policy` reads and validates the policy file, :mod:`.plugin` answers ``authorize``.
"""
