# syntax=docker/dockerfile:1
# actorserve node image. Build:  docker build -t actorserve:0.1.0 .
# Run:    docker run --rm -p 8080:8080 -e ACTORSERVE_CLUSTER_SECRET=... actorserve:0.1.0
# No secret is baked in: the cluster secret comes from the environment at run time
# (on Kubernetes from the Secret `actorserve`, see docs/kubernetes.md).

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile TypeScript, train the iris model, then drop dev dependencies
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# .npmrc holds onnxruntime-node-install=skip: its postinstall would fetch CUDA
# files from outside the registry; the CPU binaries ship inside the npm package.
COPY package.json package-lock.json .npmrc ./
# Dependencies first, in their own layer (cached while the lockfile is unchanged).
# --ignore-scripts: `prepare` needs the sources, copied below, so it runs after.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
# What `npm ci` runs as `prepare`: tsc build + models/iris/1/model.onnx.
RUN npm run prepare \
 && test -f dist/src/cli.js \
 && test -f models/iris/1/model.onnx
# Production dependencies only; onnxruntime-node ships binaries for every OS, keep Linux's.
RUN npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/onnxruntime-node/bin/napi-v*/darwin node_modules/onnxruntime-node/bin/napi-v*/win32

# ---- runtime: production dependencies, compiled JS, the trained model
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# Files stay owned by root and read-only to the app user.
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/dist ./dist
COPY --from=build /app/models ./models
# The image's `node` user (uid/gid 1000), numeric so Kubernetes runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080
# Node handles SIGTERM itself (graceful leave: drain, hand off, exit 0).
ENTRYPOINT ["node", "--initial-old-space-size=256", "/app/bin/actorserve.js"]
CMD ["node", "--host", "0.0.0.0", "--port", "8080"]
