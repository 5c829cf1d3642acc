# Hostkeeper's stdout callback: ONE JSON object per line on stdout, flushed at once, so the
# controller can show progress and the exact failure message of each host.
#
#   {"event":"task","task":"agent : Copy the agent bundle"}                  at each task start
#   {"event":"ok"|"changed"|"skipped","host":"10.0.0.5","task":"..."}        per host result
#   {"event":"failed"|"unreachable","host":"10.0.0.5","task":"...",
#    "msg":"...","stderr":"...","rc":1}                                     (stderr, rc: when there)
#   {"event":"stats","hosts":{"10.0.0.5":{"ok":9,"changed":3,"failed":0,"unreachable":0,"skipped":2}}}
#
# A failure that the task ignores (ignore_errors) is a "failed" event with "ignored":true.
# Results of a loop come once per host (the whole loop), not per item; a failed loop's msg
# names the failed items. Nothing else is printed: never vars, never a result's data (the
# agent's config holds its secret). Ansible's own warnings and errors before the play starts
# go to stderr, and a few plain lines (such as "skipping: no hosts matched") may still reach
# stdout: readers should skip lines that are not JSON.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = '''
    name: hostkeeper
    type: stdout
    short_description: one JSON object per line, for the Hostkeeper controller
    description:
      - Task starts, per-host results (messages only for failures) and final stats as JSON lines.
'''

import json
import sys

from ansible.plugins.callback import CallbackBase

MAX_TEXT = 2000


def _trim(text):
    """Keeps the head and the tail of a long text: the cause is often at one end."""
    if not isinstance(text, str):
        text = str(text)
    text = text.replace('\r\n', '\n').strip()  # ssh's messages come with CRLF
    if len(text) <= MAX_TEXT:
        return text
    half = MAX_TEXT // 2
    return text[:half] + '\n...\n' + text[-half:]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'hostkeeper'

    def _emit(self, obj):
        sys.stdout.write(json.dumps(obj, separators=(',', ':')) + '\n')
        sys.stdout.flush()

    @staticmethod
    def _task_name(task):
        # "<role> : <name>" for a role's task; a task without a name gets its action.
        return task.get_name().strip()

    def _result(self, event, result, failure=False, ignored=False):
        out = {'event': event, 'host': result._host.get_name(), 'task': self._task_name(result._task)}
        if failure:
            out.update(self._failure(result._result))
        if ignored:
            out['ignored'] = True
        self._emit(out)

    @staticmethod
    def _failure(r):
        """msg, stderr and rc of a failed or unreachable result (no other field of it)."""
        if 'censored' in r:  # no_log: Ansible already replaced the result
            return {'msg': r['censored']}
        msg = r.get('msg') or ''
        stderr = r.get('stderr') or r.get('module_stderr') or ''
        items = r.get('results')
        if isinstance(items, list):
            parts = []
            for item in items:
                if not isinstance(item, dict) or not item.get('failed'):
                    continue
                label = item.get('_ansible_item_label', item.get('item', ''))
                label = label if isinstance(label, str) else json.dumps(label)
                if 'censored' in item:
                    text = item['censored']
                else:
                    err = (item.get('stderr') or item.get('module_stderr') or '').strip()
                    text = (item.get('msg') or '') + ((' (%s)' % err) if err else '')
                # Items failing for one cause (a read-only file system) are named once together.
                if parts and parts[-1][1] == text:
                    parts[-1][0].append(label)
                else:
                    parts.append(([label], text))
            if parts:
                msg = '; '.join('item %s: %s' % (', '.join(labels), text) for labels, text in parts)
        # raw tasks (run through a pty) say what went wrong on stdout; Ansible's own msg is then
        # only "non-zero return code".
        stdout = (r.get('stdout') or '').replace('\r\n', '\n').strip()
        if stdout and (not msg or msg == 'non-zero return code'):
            msg = stdout
        if not msg and stderr:
            msg = stderr
        out = {'msg': _trim(msg or 'failed (no message)')}
        if stderr:
            out['stderr'] = _trim(stderr)
        if isinstance(r.get('rc'), int):
            out['rc'] = r['rc']
        return out

    # -- task starts -------------------------------------------------------------------------
    def v2_playbook_on_task_start(self, task, is_conditional):
        # meta tasks (flush_handlers) report no result: no event either.
        if task.action not in ('meta', 'ansible.builtin.meta', 'ansible.legacy.meta'):
            self._emit({'event': 'task', 'task': self._task_name(task)})

    def v2_playbook_on_handler_task_start(self, task):
        self._emit({'event': 'task', 'task': self._task_name(task)})

    # -- per-host results --------------------------------------------------------------------
    def v2_runner_on_ok(self, result):
        self._result('changed' if result._result.get('changed', False) else 'ok', result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result('failed', result, failure=True, ignored=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._result('skipped', result)

    def v2_runner_on_unreachable(self, result):
        self._result('unreachable', result, failure=True)

    # Items and retries are summed up by the per-host result above: nothing per item.
    def v2_runner_item_on_ok(self, result):
        pass

    def v2_runner_item_on_failed(self, result):
        pass

    def v2_runner_item_on_skipped(self, result):
        pass

    def v2_runner_retry(self, result):
        pass

    def v2_playbook_on_no_hosts_remaining(self):
        pass

    # -- the end -----------------------------------------------------------------------------
    def v2_playbook_on_stats(self, stats):
        hosts = {}
        for h in sorted(stats.processed.keys()):
            s = stats.summarize(h)
            hosts[h] = {'ok': s['ok'], 'changed': s['changed'], 'failed': s['failures'], 'unreachable': s['unreachable'], 'skipped': s['skipped']}
        self._emit({'event': 'stats', 'hosts': hosts})
