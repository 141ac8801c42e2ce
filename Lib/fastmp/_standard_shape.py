"""Class-creation hook shared by fastmp's queues and Pool: a subclass that
defines one of the standard package's private names relies on the
standard mechanics behind it, so it gets a standard-shaped base class in
place of the fast one (see _pipe_queues.py and _pipe_pool.py)."""

__all__ = ['take_standard_shape']


def take_standard_shape(cls, mechanics, counterparts):
    """If `cls`, or a class it inherits from outside fastmp, defines one of
    the names in `mechanics`, rebase it on the standard-shaped class.
    `counterparts()` maps each fast class, most derived first, to its
    standard-shaped counterpart (None: keep the fast class)."""
    if getattr(cls, '_standard_shaped', False):
        return
    # what fastmp's own classes define says nothing about the subclass
    added = [k for k in cls.__mro__
             if k is not object and not k.__module__.startswith('fastmp.')]
    if all(mechanics.isdisjoint(vars(k)) for k in added):
        return
    shapes = counterparts()
    fast = next(fast for fast in shapes if issubclass(cls, fast))
    if shapes[fast] is None:
        return
    bases = tuple(shapes.get(base) or base for base in cls.__bases__)
    if not any(getattr(base, '_standard_shaped', False) for base in bases):
        # cls derives from a fast subclass: the standard shape comes after it
        bases += (shapes[fast],)
    cls.__bases__ = bases
