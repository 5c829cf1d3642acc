# hk_agent_listen: the "listen" of the agent's config file, read on the controller, as
# {"listen": "IP:PORT", "problem": ""}, or {"listen": "", "problem": "<one line>"} when the
# file cannot be read, is not a JSON object, or has a bad "listen". It never raises (a
# raised error would reach the user wrapped in Ansible's template text) and never returns
# anything else from the file: it holds the agent's secret.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import re

DEFAULT_LISTEN = '0.0.0.0:7070'  # the agent's own default (agent/flags.ts)
LISTEN_RE = re.compile(r'^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$')


def hk_agent_listen(path):
    def problem(text):
        return {'listen': '', 'problem': '%s: %s' % (path, text)}

    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        return problem('cannot read it: %s' % (e.strerror or e))
    try:
        doc = json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError:
        return problem('not UTF-8')
    except ValueError as e:
        # The position only: the text around it could be the secret.
        return problem('not valid JSON (line %s column %s)' % (getattr(e, 'lineno', '?'), getattr(e, 'colno', '?')))
    if not isinstance(doc, dict):
        return problem('must hold a JSON object')
    listen = doc.get('listen')
    if listen is None:
        return {'listen': DEFAULT_LISTEN, 'problem': ''}
    m = LISTEN_RE.match(listen) if isinstance(listen, str) else None
    ok = False
    if m:
        try:
            ipaddress.IPv4Address(m.group(1))
            ok = int(m.group(2)) <= 65535
        except ValueError:
            ok = False
    if not ok:
        return problem('listen must be IP:PORT like 0.0.0.0:7070, got %s' % json.dumps(listen))
    return {'listen': listen, 'problem': ''}


class FilterModule(object):
    def filters(self):
        return {'hk_agent_listen': hk_agent_listen}
