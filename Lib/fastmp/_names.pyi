# Type information for fastmp._names (written for fastmp).
__all__ = ['fresh_name', 'root_pid']

root_pid: str

def adopt_root_pid(pid: str | int) -> None: ...
def fresh_name(kind: str = 'fmp') -> str: ...
