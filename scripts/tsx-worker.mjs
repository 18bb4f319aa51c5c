// Runs a TypeScript worker module through tsx, for running from source (the tests): the worker pool
// loads this file, which registers tsx in its thread and re-exports the handler of `workerData.tsxEntry`.
import { register } from 'tsx/esm/api';
import { workerData } from 'piscina';

register();
const entry = await import(workerData.tsxEntry);
export default entry.default;
