/** The store contract (test/store/contract.ts) on the embedded store: a new temp store each. */
import { afterAll, describe } from 'vitest';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { tempDir } from '../helpers.ts';
import { storeContract } from './contract.ts';

const opened: EmbeddedStore[] = [];
afterAll(async () => {
  for (const s of opened) await s.close();
});

describe('embedded store: the Repository contract', () => {
  storeContract(async () => {
    const s = await EmbeddedStore.open(await tempDir(), { sync: false, log: { info() {}, warn() {} } });
    opened.push(s);
    return s;
  });
});
