# cython: language_level=3
# The engine's contract with the Python layer: set codes and statuses,
# declared once. ``cpdef`` makes each member a module attribute of
# eco._cp_core as well (eco._cp_core.SET_MARGIN, eco._cp_core.STATUS_OK).

# Set of an example. INACTIVE examples were removed (or never learned); DRIVEN
# marks the examples whose coefficients are being driven during one operation.
cpdef enum SetCode:
    SET_INACTIVE = -1
    SET_RESERVE = 0
    SET_MARGIN = 1
    SET_ERROR = 2
    SET_DRIVEN = 3

# Outcome of learn / unlearn / warm start. Def entry points never return one:
# anything but STATUS_OK is raised as eco.exceptions.EngineError carrying it.
cpdef enum Status:
    STATUS_OK = 0
    STATUS_STEP_LIMIT = 1        # more steps than max_steps: cycling suspected
    STATUS_NO_EVENT = 2          # a path with no event and no end: numerical breakdown
    STATUS_SINGULAR = 3          # refactorisation of A failed
    STATUS_NO_MEMORY = 4
    STATUS_INJECTED_FAULT = 5    # the test hook fail_at_step fired
    STATUS_NON_FINITE = 6        # a NaN or infinity appeared in the state
    STATUS_INCONSISTENT = 7      # the path ended outside the KKT conditions (degenerate data)
