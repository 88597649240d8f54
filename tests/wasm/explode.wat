;; flat_map.wasm: input (n: integer), output (n: integer): each n emitted n % 3 times.
(module
  (memory (export "memory") 1)
  ;; A bump allocator: `flint_alloc` regions live forever (the host asks rarely and
  ;; reuses them); output batches are built above the heap top and are dead once the
  ;; host read them, so every call starts from the same place.
  (global $heap (mut i32) (i32.const 4096))
  (func $ensure (param $end i32)
    (local $pages i32)
    (local.set $pages (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1)) (then unreachable)))))
  (func (export "flint_alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (call $ensure (i32.add (local.get $p) (local.get $size)))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  ;; The first free 8-aligned address above the heap.
  (func $scratch (result i32)
    (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
  ;; Writes a batch header at $at: $rows rows, $cols columns, no groups.
  (func $header (param $at i32) (param $rows i32) (param $cols i32)
    (i32.store (local.get $at) (local.get $rows))
    (i32.store offset=4 (local.get $at) (local.get $cols))
    (i64.store offset=8 (local.get $at) (i64.const 0))
    (i64.store offset=16 (local.get $at) (i64.const 0)))
  ;; Writes column descriptor $c of the batch at $at.
  (func $column (param $at i32) (param $c i32) (param $type i32) (param $values i32) (param $data i32)
    (local $d i32)
    (local.set $d (i32.add (i32.add (local.get $at) (i32.const 24)) (i32.shl (local.get $c) (i32.const 4))))
    (i32.store (local.get $d) (local.get $type))
    (i32.store offset=4 (local.get $d) (i32.const 0))
    (i32.store offset=8 (local.get $d) (local.get $values))
    (i32.store offset=12 (local.get $d) (local.get $data)))
  ;; Field $f (values, offsets or data) of input column $c of the batch at $in.
  (func $input (param $in i32) (param $c i32) (param $f i32) (result i32)
    (i32.load (i32.add (i32.add (i32.add (local.get $in) (i32.const 24)) (i32.shl (local.get $c) (i32.const 4))) (local.get $f))))

  (func (export "flat_map") (param $in i32) (result i32)
    (local $rows i32) (local $vals i32) (local $out i32) (local $ovals i32) (local $i i32)
    (local $k i32) (local $n i64) (local $count i32)
    (local.set $rows (i32.load (local.get $in)))
    (local.set $vals (call $input (local.get $in) (i32.const 0) (i32.const 8)))
    (local.set $out (call $scratch))
    (local.set $ovals (i32.add (local.get $out) (i32.const 40)))
    (call $ensure (i32.add (local.get $ovals) (i32.shl (local.get $rows) (i32.const 4))))
    (block $done (loop $row
      (br_if $done (i32.ge_u (local.get $i) (local.get $rows)))
      (local.set $n (i64.load (i32.add (local.get $vals) (i32.shl (local.get $i) (i32.const 3)))))
      (local.set $k (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 3))))
      (block $emitted (loop $emit
        (br_if $emitted (i32.eqz (local.get $k)))
        (i64.store (i32.add (local.get $ovals) (i32.shl (local.get $count) (i32.const 3))) (local.get $n))
        (local.set $count (i32.add (local.get $count) (i32.const 1)))
        (local.set $k (i32.sub (local.get $k) (i32.const 1)))
        (br $emit)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $row)))
    (call $header (local.get $out) (local.get $count) (i32.const 1))
    (call $column (local.get $out) (i32.const 0) (i32.const 1) (local.get $ovals) (i32.const 0))
    (local.get $out)))
