"""The contract between method_calls.c and the Python package: the names C looks
up on proxies, servers and connections (listed once, in
fastmp.managers._NAMES_C_READS) are the names in method_calls.c's string table,
and each is there, of the expected kind, on the live objects C reads it
from.  A rename on either side fails here instead of silently sending
every call down the slow path (or breaking it)."""
import glob
import inspect
import os
import re
import threading

import pytest

import fastmp
from fastmp import connection, managers, process
from support import HERE

ROOT = os.path.dirname(HERE)


def _manager_c_strings():
    """The strings of method_calls.c's table of interned names, in order."""
    found = glob.glob(os.path.join(ROOT, 'Modules', '_fastmp', '**', 'method_calls.c'),
                      recursive=True)
    assert len(found) == 1, found
    with open(found[0], encoding='utf-8') as f:
        source = f.read()
    table = re.search(r'string_values\[[^\]]*\]\s*=\s*\{(.*?)\};', source, re.S)
    assert table is not None, 'no string_values table in ' + found[0]
    return re.findall(r'"([^"]*)"', table.group(1))


def _listed_names():
    return [name for names in managers._NAMES_C_READS.values() for name in names]


def test_manager_c_table_is_the_listed_names():
    in_c = _manager_c_strings()
    listed = _listed_names() + list(managers._REPLY_KINDS_C_USES)
    assert len(set(in_c)) == len(in_c), in_c
    assert sorted(in_c) == sorted(set(listed)), (in_c, listed)


def _problems(holder, obj):
    """What is wrong with the names C reads on `obj` (listed for `holder`):
    each must be there, and one C calls with n arguments must accept n."""
    wrong = []
    for name, nargs in managers._NAMES_C_READS[holder].items():
        try:
            value = getattr(obj, name)
        except AttributeError:
            wrong.append('%s.%s is missing' % (holder, name))
            continue
        if nargs is None:
            continue
        try:
            inspect.signature(value).bind(*[None] * nargs)
        except (TypeError, ValueError) as e:
            wrong.append('%s.%s takes no %d arguments: %s' % (holder, name, nargs, e))
    return wrong


def _server_problems():
    """Run in the manager's server process: the server-side names."""
    server = process.current_process()._manager_server
    wrong = _problems('server', server) + _problems('server.stop_event', server.stop_event)
    # the shape fast_call() requires of an entry, else it leaves the call
    # to Python
    for ident, entry in server.id_to_obj.items():
        if ident != '0' and not (type(entry) is tuple and len(entry) == 3
                                 and type(entry[1]) in (set, frozenset)
                                 and (entry[2] is None or type(entry[2]) is dict)):
            wrong.append('id_to_obj[%r] is %r' % (ident, entry))
    if type(server.id_to_obj) is not dict:
        wrong.append('id_to_obj is a %s' % type(server.id_to_obj).__name__)
    return wrong


class _ContractManager(managers.BaseManager):
    pass


_ContractManager.register('list', list, managers.ListProxy)
_ContractManager.register('server_problems', _server_problems, managers.ListProxy)


@pytest.mark.timeout(60)
def test_listed_names_are_on_the_objects_c_reads():
    with _ContractManager(ctx=fastmp.get_context('fork')) as manager:
        shared = manager.list()
        shared.append(1)        # a call: the thread's connection is open now
        assert shared[0] == 1
        wrong = _problems('proxy', shared) + _problems('proxy._tls', shared._tls)
        wrong += list(manager.server_problems())
        conn = shared._tls.connection
        assert type(conn) is connection.Connection
        wrong += _problems('conn', conn)
        reader, writer = fastmp.Pipe()
        try:
            wrapped = connection.ConnectionWrapper(writer, repr, eval)
            wrong += _problems('conn', wrapped)
        finally:
            reader.close()
            writer.close()
    assert wrong == []
    assert type(shared._id) is str
    assert isinstance(shared._tls, threading.local)
