import { defineConfig } from "vite";

// `vite dev` talks to a gateway elsewhere: VITE_GATEWAY_URL=http://127.0.0.1:8080 npm run dev
// (the gateway answers CORS for grpc-web). The built files are served by the gateway itself.
export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, target: "es2022" },
});
