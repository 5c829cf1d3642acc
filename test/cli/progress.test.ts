import { describe, expect, it } from 'vitest';
import { ProgressLine, formatProgress, progressOf } from '../../controller/cli/progress.ts';

describe('formatProgress', () => {
  it.each<[string, unknown, string]>([
    ['all fields', { progress: { current: 2, total: 5, step: 'run-playbook', message: 'TASK [agent : copy agent]' } }, '[####......] 2/5 run-playbook: TASK [agent : copy agent]'],
    ['done', { progress: { current: 5, total: 5 } }, '[##########] 5/5'],
    ['no step', { progress: { current: 1, total: 4, message: 'connecting' } }, '[###.......] 1/4: connecting'],
    ['no counts', { progress: { step: 'connect', message: 'ssh' } }, 'connect: ssh'],
    ['only message', { progress: { message: 'ssh' } }, 'ssh'],
    ['current without total', { progress: { current: 3 } }, '3/?'],
    ['over the total is capped', { progress: { current: 9, total: 3 } }, '[##########] 9/3'],
    ['no progress', {}, 'working...'],
    ['wrong types ignored', { progress: { current: '2', total: null, step: 7 } }, 'working...'],
    ['newlines folded', { progress: { message: 'a\n  b' } }, 'a b'],
  ])('%s', (_name, body, line) => {
    expect(formatProgress(progressOf(body))).toBe(line);
  });

  it('cuts to the width so a redraw never wraps', () => {
    const line = formatProgress({ message: 'x'.repeat(200) }, 40);
    expect(line).toHaveLength(39);
    expect(line.endsWith('...')).toBe(true);
  });

  it('redraws over a longer line and clears at the end', () => {
    let out = '';
    const line = new ProgressLine({ write: (s: string) => (out += s) });
    line.draw({ message: 'long message' });
    line.draw({ message: 'short' });
    line.clear();
    expect(out).toBe(`\rlong message\rshort${' '.repeat(7)}\r${' '.repeat(5)}\r`);
  });
});
