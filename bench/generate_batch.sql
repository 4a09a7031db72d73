-- riveredge-bench generator, part 2: one batch of transactional data. The bench runs batches
-- on two connections until the database reaches the requested size. Placeholders: {{BATCH}}
-- (0-based), {{TENANTS}}, {{SEED}} (this batch's setseed value, so a batch's content does not
-- depend on which connection ran it). Ids are derived from the batch number, so batches are
-- independent: order o has items 8*o .. 8*o+6, its work order (if any) has id o.
--   per batch: 100 customers, 500 materials, ~1000 BOM lines, 4 000 sales orders, ~10 000
--   items, ~2 400 work orders, 16 000 operation-log rows.
SET client_min_messages = warning;
SELECT setseed({{SEED}});

INSERT INTO apps_master_data_customers (id, uuid, tenant_id, code, name, short_name, contact_person, phone, email, address, category, is_active, created_at, updated_at, deleted_at)
SELECT s.id, md5(random()::text)::uuid::text, bench_tenant(s.id * 31, {{TENANTS}}), 'C' || s.id,
       left(p1.txt || (ARRAY['有限公司','科技有限公司',' Co., Ltd.',' GmbH','集团'])[1 + s.id % 5], 200), left(p1.txt, 100),
       left(p2.txt, 100), '+86 21 ' || lpad(floor(random() * 1e8)::text, 8, '0'),
       CASE WHEN random() < 0.8 THEN 'sales' || s.id || '@customer' || (s.id % 977) || '.cn' END,
       CASE WHEN random() < 0.9 THEN (ARRAY['上海市','江苏省苏州市','浙江省杭州市','广东省深圳市'])[1 + s.id % 4] || p2.txt || (1 + floor(random() * 999))::int || '号' END,
       (ARRAY['A','B','C','VIP', NULL])[1 + s.id % 5], random() < 0.95,
       timestamptz '2022-01-01 00:00:00+00' + s.id * interval '41 minutes', timestamptz '2024-01-01 00:00:00+00' + random() * interval '500 days',
       CASE WHEN random() < 0.02 THEN timestamptz '2025-02-01 00:00:00+00' END
FROM (SELECT id, 1 + floor(random() * 60000)::int k1, 1 + floor(random() * 60000)::int k2
      FROM generate_series({{BATCH}} * 100 + 1, {{BATCH}} * 100 + 100) id) s
JOIN bench_phrases p1 ON p1.id = s.k1 JOIN bench_phrases p2 ON p2.id = s.k2;

INSERT INTO apps_master_data_materials (id, uuid, tenant_id, code, main_code, name, group_id, specification, base_unit, units, batch_managed,
                                        variant_attributes, material_type, defaults, images, description, brand, is_active, created_at, updated_at, deleted_at)
SELECT s.id, md5(random()::text)::uuid::text, bench_tenant(s.id * 37, {{TENANTS}}), 'M' || lpad(s.id::text, 8, '0'), 'MC' || s.id,
       left(p1.txt, 200), NULL,
       CASE WHEN random() < 0.7 THEN round((random() * 500)::numeric, 1) || 'x' || round((random() * 300)::numeric, 1) || 'mm ' || p2.txt END,
       (ARRAY['个','件','套','kg','m','箱','PCS','L'])[1 + s.id % 8],
       jsonb_build_object('base', (ARRAY['个','件','套','kg','m','箱','PCS','L'])[1 + s.id % 8],
                          'conversions', jsonb_build_array(jsonb_build_object('unit', '箱', 'factor', 1 + floor(random() * 100)::int))),
       random() < 0.3,
       CASE WHEN random() < 0.4 THEN jsonb_build_object('color', (ARRAY['red','blue','black','白色','灰色'])[1 + s.id % 5], 'size', (ARRAY['S','M','L','XL'])[1 + s.id % 4]) END,
       (ARRAY['RAW','SEMI','FINISHED','PACKING'])[1 + s.id % 4],
       jsonb_build_object('warehouse', 'W' || (1 + s.id % 7), 'safety_stock', floor(random() * 1000)::int, 'lead_days', floor(random() * 30)::int,
                          'price', round((random() ^ 3 * 10000)::numeric, 4), 'note', CASE WHEN random() < 0.3 THEN p2.txt END),
       CASE WHEN random() < 0.5 THEN jsonb_build_array(jsonb_build_object('file_uuid', md5(random()::text)::uuid, 'name', p1.txt || '.jpg')) END,
       CASE WHEN random() < 0.5 THEN p2.txt || ' ' || p1.txt END,
       CASE WHEN random() < 0.6 THEN left(p2.txt, 100) END, random() < 0.97,
       timestamptz '2022-01-01 00:00:00+00' + s.id * interval '7 minutes', timestamptz '2024-06-01 00:00:00+00' + random() * interval '400 days',
       CASE WHEN random() < 0.03 THEN timestamptz '2025-03-01 00:00:00+00' END
FROM (SELECT id, 1 + floor(random() * 60000)::int k1, 1 + floor(random() * 60000)::int k2
      FROM generate_series({{BATCH}} * 500 + 1, {{BATCH}} * 500 + 500) id) s
JOIN bench_phrases p1 ON p1.id = s.k1 JOIN bench_phrases p2 ON p2.id = s.k2;

-- BOM lines between materials of the same tenant (this batch's materials, ranked per tenant).
INSERT INTO apps_master_data_bom (id, uuid, tenant_id, material_id, component_id, quantity, unit, version, approval_status, waste_rate, is_default, created_at, updated_at)
SELECT {{BATCH}} * 2000 + row_number() OVER (ORDER BY m.id, c.id), md5(random()::text)::uuid::text, m.tenant_id, m.id, c.id,
       round((random() ^ 2 * 100)::numeric, 4), m.base_unit, (ARRAY['1.0','1.1','2.0'])[1 + (m.id + c.id) % 3],
       (ARRAY['draft','approved','approved','rejected'])[1 + c.id % 4], CASE WHEN random() < 0.6 THEN round((random() * 5)::numeric, 2) END,
       c.rn = m.rn + 1, m.created_at, m.updated_at
FROM (SELECT id, tenant_id, base_unit, created_at, updated_at, row_number() OVER (PARTITION BY tenant_id ORDER BY id) rn
      FROM apps_master_data_materials WHERE id BETWEEN {{BATCH}} * 500 + 1 AND {{BATCH}} * 500 + 500) m
JOIN (SELECT id, tenant_id, row_number() OVER (PARTITION BY tenant_id ORDER BY id) rn
      FROM apps_master_data_materials WHERE id BETWEEN {{BATCH}} * 500 + 1 AND {{BATCH}} * 500 + 500) c
  ON c.tenant_id = m.tenant_id AND c.rn BETWEEN m.rn + 1 AND m.rn + 3;

INSERT INTO apps_kuaizhizao_sales_orders (id, uuid, tenant_id, order_code, customer_id, customer_name, order_date, delivery_date, order_type,
                                          total_quantity, total_amount, status, review_status, remark, attachments, discount_amount, created_by,
                                          created_at, updated_at, deleted_at)
SELECT s.id, md5(random()::text)::uuid::text, bench_tenant(s.id, {{TENANTS}}), 'SO' || to_char(s.created_at, 'YYYYMMDD') || lpad(s.id::text, 8, '0'),
       1 + floor(random() * 2000)::int, left(p1.txt || '有限公司', 200), s.created_at::date, s.created_at::date + (3 + floor(random() * 60))::int,
       (ARRAY['MTO','MTS','MTO','ETO'])[1 + s.id % 4],
       round((random() ^ 2 * 10000)::numeric, 2), round((random() ^ 3 * 1000000)::numeric, 2),
       (ARRAY['草稿','待审核','已审核','生产中','已发货','已完成','已完成','已完成','已取消'])[1 + floor(random() * 9)::int],
       (ARRAY['待审核','已通过','已驳回','已通过'])[1 + floor(random() * 4)::int],
       CASE WHEN random() < 0.55 THEN NULL WHEN random() < 0.5 THEN p2.txt ELSE p2.txt || E'\n' || p1.txt || '; ' || p3.txt END,
       CASE WHEN random() < 0.65 THEN NULL ELSE
           jsonb_build_array(jsonb_build_object('file_uuid', md5(random()::text)::uuid, 'name', p3.txt || '.pdf', 'size', floor(random() * 5e6)::int,
                                                'uploaded_at', s.created_at + random() * interval '2 days')) END,
       CASE WHEN random() < 0.8 THEN NULL ELSE round((random() * 5000)::numeric, 2) END,
       1 + floor(random() * 20000)::int,
       s.created_at, s.created_at + random() ^ 4 * interval '90 days',
       CASE WHEN random() < 0.03 THEN s.created_at + interval '10 days' END
FROM (SELECT id, timestamptz '2023-01-01 00:00:00+08' + id * interval '53 seconds' + random() * interval '1 hour' AS created_at,
             1 + floor(random() * 60000)::int k1, 1 + floor(random() * 60000)::int k2, 1 + floor(random() * 60000)::int k3
      FROM generate_series({{BATCH}} * 4000 + 1, {{BATCH}} * 4000 + 4000) id) s
JOIN bench_phrases p1 ON p1.id = s.k1 JOIN bench_phrases p2 ON p2.id = s.k2 JOIN bench_phrases p3 ON p3.id = s.k3;

INSERT INTO apps_kuaizhizao_sales_order_items (id, uuid, tenant_id, sales_order_id, material_id, quantity, unit_price, total_amount, delivery_date,
                                               work_order_id, tax_rate, remark, created_at, updated_at)
SELECT s.o * 8 + s.k, md5(random()::text)::uuid::text, bench_tenant(s.o, {{TENANTS}}), s.o, 1 + floor(random() * 500000)::int,
       s.q, s.price, round(s.q * s.price, 2), DATE '2023-01-01' + (s.o / 1600)::int + floor(random() * 60)::int,
       NULL, (ARRAY[13.00, 9.00, 6.00, 0.00])[1 + floor(random() * 4)::int],
       CASE WHEN random() < 0.8 THEN NULL ELSE p.txt END,
       timestamptz '2023-01-01 00:00:00+08' + s.o * interval '53 seconds', timestamptz '2023-01-01 00:00:00+08' + s.o * interval '53 seconds' + random() * interval '30 days'
FROM (SELECT o, k, round((1 + random() ^ 3 * 999)::numeric, 2) q, round((random() ^ 2 * 2000 + 0.5)::numeric, 2) price, 1 + floor(random() * 60000)::int kp
      FROM generate_series({{BATCH}} * 4000 + 1, {{BATCH}} * 4000 + 4000) o
      CROSS JOIN LATERAL generate_series(0, floor(random() ^ 1.5 * 6.99)::int + o * 0) k) s
JOIN bench_phrases p ON p.id = s.kp;

-- Work orders for ~60 % of the orders, pointing at the order and its first item (the second FK
-- cycle: work_orders.sales_order_item_id -> items, items.work_order_id -> work_orders).
INSERT INTO apps_kuaizhizao_work_orders (id, uuid, tenant_id, code, product_id, quantity, production_mode, sales_order_id, sales_order_item_id,
                                         status, priority, created_by, created_by_name, attachments, created_at, updated_at, deleted_at)
SELECT s.o, md5(random()::text)::uuid::text, bench_tenant(s.o, {{TENANTS}}), 'WO' || lpad(s.o::text, 9, '0'), 1 + floor(random() * 500000)::int,
       round((1 + random() ^ 3 * 5000)::numeric, 2), (ARRAY['MTS','MTO'])[1 + s.o % 2], s.o, s.o * 8,
       (ARRAY['draft','released','in_progress','completed','completed','closed'])[1 + floor(random() * 6)::int],
       (ARRAY['normal','normal','high','urgent','low'])[1 + floor(random() * 5)::int],
       1 + floor(random() * 20000)::int, left(p.txt, 100),
       CASE WHEN random() < 0.85 THEN NULL ELSE jsonb_build_object('drawings', jsonb_build_array(md5(random()::text)), 'notes', p.txt) END,
       timestamptz '2023-01-01 00:00:00+08' + s.o * interval '53 seconds' + interval '1 day',
       timestamptz '2023-01-01 00:00:00+08' + s.o * interval '53 seconds' + interval '1 day' + random() ^ 3 * interval '60 days',
       CASE WHEN random() < 0.02 THEN timestamptz '2025-01-01 00:00:00+00' END
FROM (SELECT o, 1 + floor(random() * 60000)::int kp FROM generate_series({{BATCH}} * 4000 + 1, {{BATCH}} * 4000 + 4000) o
      WHERE bench_u(o * 13) < 0.6) s
JOIN bench_phrases p ON p.id = s.kp;

-- Operation logs: append-only, the biggest table in a real deployment; content of very varied
-- length (a short action line up to a multi-field change record).
INSERT INTO core_operation_logs (id, uuid, tenant_id, user_id, operation_type, operation_module, operation_object_type, operation_object_id,
                                 operation_content, ip_address, user_agent, request_method, request_path, created_at)
OVERRIDING SYSTEM VALUE
SELECT s.id, md5(random()::text)::uuid::text, bench_tenant(s.id * 17, {{TENANTS}}), 1 + floor(random() * 20000)::int,
       s.op, s.module, s.module || '_record', floor(random() * 1e6)::int,
       CASE WHEN s.r < 0.35 THEN s.op || ' ' || p1.txt
            WHEN s.r < 0.75 THEN jsonb_build_object('action', s.op, 'fields', jsonb_build_object('name', p1.txt, 'status', p2.txt, 'qty', round((random() * 1000)::numeric, 2)))::text
            ELSE jsonb_build_object('action', s.op, 'before', jsonb_build_object('remark', p1.txt, 'amount', round((random() * 1e5)::numeric, 2)),
                                    'after', jsonb_build_object('remark', p2.txt || ' ' || p3.txt, 'amount', round((random() * 1e5)::numeric, 2)),
                                    'reason', p3.txt)::text END,
       CASE WHEN random() < 0.1 THEN NULL ELSE '10.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int END,
       (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36',
              'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
              'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 MicroMessenger/8.0.49',
              'python-httpx/0.27.0', NULL])[1 + floor(random() * 5)::int],
       (ARRAY['GET','POST','PUT','DELETE','POST'])[1 + floor(random() * 5)::int],
       '/api/v1/' || s.module || '/' || CASE WHEN random() < 0.5 THEN md5(random()::text)::uuid::text ELSE floor(random() * 1e6)::int::text END,
       timestamptz '2023-01-01 00:00:00+08' + s.id * interval '13 seconds'
FROM (SELECT id, random() r,
             (ARRAY['create','update','update','delete','login','export','approve','view'])[1 + floor(random() * 8)::int] op,
             (ARRAY['sales_orders','work_orders','materials','bom','users','customers','inventory','quality'])[1 + floor(random() * 8)::int] module,
             1 + floor(random() * 60000)::int k1, 1 + floor(random() * 60000)::int k2, 1 + floor(random() * 60000)::int k3
      FROM generate_series({{BATCH}} * 16000 + 1, {{BATCH}} * 16000 + 16000) id) s
JOIN bench_phrases p1 ON p1.id = s.k1 JOIN bench_phrases p2 ON p2.id = s.k2 JOIN bench_phrases p3 ON p3.id = s.k3;
