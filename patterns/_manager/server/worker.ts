/**
 * The worker entry of the embedded manager server (`Manager.start()`): it
 * takes `{ port, mem, bell, threadId, register }`, loads the registered types, answers
 * `{ ready: true }` (or `{ error }`) and serves the port — and every port
 * attached through it — with one {@linkcode ServerCore}.
 *
 * @module
 */

import { errorInfo } from "../../_core/errors.ts";
import { isMainThread, workerData } from "node:worker_threads";
import { installWorkerRuntime, postToParent } from "../../_core/worker.ts";
import type { LinkMemory } from "../protocol.ts";
import { ServerCore } from "./core.ts";
import { loadRegister, type RegisteredType } from "./hosted.ts";
import { LocalHub } from "./hub.ts";

/** Whether this module runs as a worker's entry (not imported elsewhere). */
const inWorker = !isMainThread && workerData !== null;

if (inWorker) {
  const core = new ServerCore();
  const post = (m: unknown) => postToParent(m);
  installWorkerRuntime((data) => {
    const init = data as {
      port: MessagePort;
      mem: LinkMemory;
      bell: SharedArrayBuffer;
      threadId: number;
      register?: Record<string, RegisteredType>;
    };
    loadRegister(init.register).then((types) => {
      core.hosted = types;
      new LocalHub(core, init.bell).add(init.port, init.mem, init.threadId);
      post({ ready: true });
    }, (e) => post({ error: errorInfo(e) }));
  });
}
