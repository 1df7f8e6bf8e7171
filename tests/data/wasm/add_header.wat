;; A proxy-wasm (ABI 0.2.1) HTTP filter, written by hand for meshplane's WasmPlugin tests.
;; On every response it adds the header `x-wasm-plugin` whose value is the plugin's configuration as the host
;; delivers it (a WasmPlugin's pluginConfig, as JSON), and on every request `x-wasm-request: 1`.
;; Build: wat2wasm add_header.wat -o add_header.wasm   (Debian package wabt)
(module
  (import "env" "proxy_get_buffer_bytes"
    (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0..7: the host writes (pointer, size) of a returned buffer here; 16..: constant strings.
  (data (i32.const 16) "x-wasm-plugin")      ;; 13 bytes
  (data (i32.const 32) "x-wasm-request")     ;; 14 bytes
  (data (i32.const 48) "1")
  (global $heap (mut i32) (i32.const 1024))
  (global $config_ptr (mut i32) (i32.const 0))
  (global $config_size (mut i32) (i32.const 0))

  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize"))

  ;; A bump allocator: the host asks for memory to hand buffers over.
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get $size)) (i32.const 7))
                               (i32.const -8)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get $size) (i32.const 65536)) (i32.const 1))))))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))

  ;; Keep the plugin configuration (buffer type 7: PluginConfiguration).
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.gt_s (local.get $size) (i32.const 0))
      (then
        (if (i32.eqz (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size)
                                             (i32.const 0) (i32.const 4)))
          (then
            (global.set $config_ptr (i32.load (i32.const 0)))
            (global.set $config_size (i32.load (i32.const 4)))))))
    (i32.const 1))

  ;; Map type 0: request headers; 2: response headers. Return 0: continue.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add_header (i32.const 0) (i32.const 32) (i32.const 14) (i32.const 48) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add_header (i32.const 2) (i32.const 16) (i32.const 13)
                            (global.get $config_ptr) (global.get $config_size)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
