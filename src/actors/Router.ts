/**
 * Decides where each accepted request runs. On one node that is the model's
 * local batcher; the cluster layer adds remote choices behind the same
 * messages.
 */
import { dispatch, spawn, type Ref } from 'nact';
import { errorFrame, type BatcherActorMsg, type RouterMsg } from './messages.js';
import { modelNotFound } from '../errors.js';

export function spawnRouter(parent: Ref<unknown>, batchers: ReadonlyMap<string, Ref<BatcherActorMsg>>): Ref<RouterMsg> {
  return spawn(
    parent as Ref<never>,
    (s: null, msg: RouterMsg) => {
      switch (msg.t) {
        case 'infer': {
          const batcher = batchers.get(msg.req.spec.name);
          if (batcher) dispatch(batcher, { t: 'enqueue', req: msg.req });
          else dispatch(msg.req.replyTo, { t: 'reply', key: msg.req.key, frame: errorFrame(msg.req.id, modelNotFound(`model ${msg.req.spec.name} is not served here`)) });
          return s;
        }
        case 'cancel': {
          const batcher = batchers.get(msg.model);
          if (batcher) dispatch(batcher, { t: 'cancel', key: msg.key });
          return s;
        }
      }
    },
    'router',
  );
}
