# Type information for fastmp._dropin (written for fastmp).
__all__ = ['install']

ENV_VAR: str

def install() -> None: ...
