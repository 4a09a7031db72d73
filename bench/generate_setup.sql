-- riveredge-bench generator, part 1 (run once after schema.sql): helper functions, the phrase
-- pool, tenants and per-tenant master data. Placeholders replaced by the bench binary (integers
-- and a float it computes itself): {{TENANTS}}, {{SIZE_MB}}, {{SEED}}.
--
-- Tenant sizes follow a power law: the tenant of a row keyed k is 1 + floor(T * u(k)^2), with
-- u(k) uniform in [0,1) from a hash, so tenant t holds sqrt(t/T) - sqrt((t-1)/T) of the rows:
-- tenant 1 about 10 %, tenant T about 0.5 %, tenant T/4 about 1 % (the "one of 100" case).
-- Deriving the tenant from the row's id (not from random()) lets child rows (order items, work
-- orders) find their parent's tenant without a join, and makes the data set reproducible.
SET client_min_messages = warning;
SELECT setseed({{SEED}});

CREATE FUNCTION bench_u(k bigint) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8(k)::float8 + 2147483648.0) / 4294967296.0 $$;
CREATE FUNCTION bench_tenant(k bigint, n int) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT least(n, 1 + floor(n * bench_u(k) ^ 2)::int) $$;
-- Expected share of the rows for tenant t of n (for per-tenant master data counts).
CREATE FUNCTION bench_share(t int, n int) RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT sqrt(t::float8 / n) - sqrt((t - 1)::float8 / n) $$;

-- Phrase pool: 60 000 phrases of 1..12 words (skewed short), 60 % Chinese, 40 % English.
INSERT INTO bench_phrases (id, txt)
SELECT s.p,
       CASE WHEN s.zh THEN
           (SELECT string_agg((ARRAY['订单','物料','生产','计划','仓库','库存','采购','销售','客户','供应商','质检','工序','设备','维修','保养','批次','序列号','成品','半成品','原材料',
                                     '包装','发货','收货','退货','入库','出库','盘点','调拨','工单','报工','排产','产线','车间','班组','工位','模具','夹具','刀具','检验','合格',
                                     '不合格','返工','报废','审核','审批','提交','草稿','完成','取消','紧急','普通','上海','北京','深圳','苏州','杭州','广州','成都','武汉','南京',
                                     '有限公司','科技','精密','机械','电子','塑胶','五金','材料','制造','集团','规格','型号','颜色','尺寸','重量','单位','数量','单价','金额','税率',
                                     '备注','说明','交期','延期','加急','已发货','待审核','已审核','生产中','已入库','按时','质量','问题','改进','建议','客户要求','技术','标准','图纸','版本'])
                              [1 + floor(random() * 100)::int + g * 0], '')
              FROM generate_series(1, s.n) g)
       ELSE
           (SELECT string_agg((ARRAY['order','material','production','plan','warehouse','stock','purchase','sales','customer','supplier','inspection','process','equipment','repair',
                                     'maintenance','batch','serial','finished','semi','raw','packing','shipping','receiving','return','inbound','outbound','count','transfer','work',
                                     'report','schedule','line','workshop','team','station','mold','fixture','tool','check','pass','fail','rework','scrap','review','approve','submit',
                                     'draft','done','cancel','urgent','normal','steel','aluminium','copper','plastic','rubber','glass','paper','box','pallet','carton','bolt','nut',
                                     'screw','washer','bearing','gear','shaft','motor','sensor','cable','board','panel','frame','cover','housing','spring','valve','pump','filter',
                                     'seal','pipe','tube','plate','sheet','rod','bar','wire','coil','red','blue','black','white','grey','large','small','medium','heavy','light',
                                     'left','right','upper','lower','inner','outer','front','rear','new','old','spare','main','sub','v2','rev','A','B','C','Shanghai','Suzhou','Ningbo'])
                              [1 + floor(random() * 120)::int + g * 0], ' ')
              FROM generate_series(1, s.n) g)
       END
FROM (SELECT p, 1 + floor(random() ^ 2 * 12)::int AS n, random() < 0.6 AS zh
      FROM generate_series(1, 60000) p) s;
ANALYZE bench_phrases;

-- Platform rows.
INSERT INTO infra_platform_settings (key, value)
SELECT 'setting.' || i, CASE WHEN i % 3 = 0 THEN E'multi\tline\nvalue ' || i ELSE md5(i::text) END
FROM generate_series(1, 40) i;
INSERT INTO aerich (version, app, content)
SELECT i || '_20250101000000_update.py', 'models',
       jsonb_build_object('upgrade', repeat('ALTER TABLE x ADD COLUMN c' || i || ' INT; ', 1 + i % 7), 'n', i)
FROM generate_series(1, 144) i;

INSERT INTO infra_tenants (uuid, name, domain, status, plan, settings, max_users, expires_at, created_at, updated_at)
SELECT md5('tenant' || t)::uuid::text, '租户 ' || t || ' ' || p.txt, 'tenant' || t || '.example.com',
       (ARRAY['active','active','active','inactive','expired','suspended'])[1 + t % 6],
       (ARRAY['trial','basic','professional','enterprise'])[1 + t % 4],
       jsonb_build_object('locale', CASE WHEN t % 5 = 0 THEN 'en-US' ELSE 'zh-CN' END, 'features',
                          jsonb_build_array('mes', 'qms', 'wms'), 'max_orders', t * 1000),
       10 + t % 90, timestamptz '2026-01-01 00:00:00+08' + t * interval '3 days',
       timestamptz '2023-01-01 08:00:00+08' + t * interval '1 day', timestamptz '2025-06-01 00:00:00+00'
FROM generate_series(1, {{TENANTS}}) t JOIN bench_phrases p ON p.id = t;

-- Per-tenant master data, proportional to the tenant's share (at least a few rows each).
CREATE TEMP TABLE bench_tenant_counts AS
SELECT t, 3 + ceil(bench_share(t, {{TENANTS}}) * {{SIZE_MB}} * 2)::int AS depts,
       5 + ceil(bench_share(t, {{TENANTS}}) * {{SIZE_MB}} * 20)::int AS users,
       3 + t % 6 AS roles
FROM generate_series(1, {{TENANTS}}) t;

INSERT INTO core_departments (uuid, tenant_id, name, code, description, sort_order, is_active, created_at, updated_at, deleted_at)
SELECT md5(random()::text)::uuid::text, c.t, '部门 ' || p.txt, 'D' || d,
       CASE WHEN random() < 0.5 THEN p.txt || E'\n' || p.txt END, d, random() < 0.95,
       timestamp '2023-02-01 09:00:00' + d * interval '1 hour', timestamp '2024-02-02 10:30:00',
       CASE WHEN random() < 0.03 THEN timestamp '2025-03-01 00:00:00' END
FROM bench_tenant_counts c CROSS JOIN LATERAL generate_series(1, c.depts) d
JOIN bench_phrases p ON p.id = 1 + (d * 7919 + c.t * 131) % 60000;
UPDATE core_departments c SET parent_id = p.id
FROM core_departments p
WHERE p.tenant_id = c.tenant_id AND p.code = 'D1' AND c.code <> 'D1';

INSERT INTO core_positions (uuid, tenant_id, name, code, description, department_id, sort_order)
SELECT md5('pos' || d.id)::uuid::text, d.tenant_id, '岗位 ' || d.code, 'P' || d.code, d.description, d.id, d.sort_order
FROM core_departments d ORDER BY d.id;

INSERT INTO core_users (uuid, tenant_id, username, email, password_hash, full_name, is_tenant_admin, source,
                        department_id, position_id, phone, remark, bio, contact_info, gender, last_login,
                        created_at, updated_at, deleted_at)
SELECT md5(random()::text)::uuid::text, c.t, 'user' || u, 'user' || u || '@t' || c.t || '.example.com',
       '$argon2id$v=19$m=65536,t=3,p=4$' || md5(random()::text) || md5(random()::text),
       p.txt, u = 1, (ARRAY['local','ldap','wechat', NULL])[1 + u % 4],
       d.id, pos.id,
       CASE WHEN random() < 0.2 THEN NULL ELSE '+86 1' || (30 + floor(random() * 60)::int) || lpad(floor(random() * 1e8)::text, 8, '0') END,
       CASE WHEN random() < 0.7 THEN NULL ELSE p.txt END,
       CASE WHEN random() < 0.5 THEN NULL ELSE repeat(p.txt || ' ', 1 + floor(random() * 4)::int) END,
       jsonb_build_object('wechat', 'wx_' || md5(random()::text), 'address',
                          jsonb_build_object('city', (ARRAY['上海','北京','深圳','苏州','杭州'])[1 + u % 5], 'zip', (200000 + floor(random() * 9999))::int),
                          'tags', jsonb_build_array(u % 7, round((random() * 100)::numeric, 2), random() < 0.5)),
       (ARRAY['male','female', NULL])[1 + u % 3],
       timestamptz '2025-05-05 12:34:56.789+02' + random() * interval '200 days',
       timestamptz '2023-01-10 00:00:00+00' + random() * interval '700 days', timestamptz '2025-01-11 00:00:00+00',
       CASE WHEN random() < 0.03 THEN timestamptz '2025-04-01 00:00:00+00' END
FROM bench_tenant_counts c CROSS JOIN LATERAL generate_series(1, c.users) u
JOIN bench_phrases p ON p.id = 1 + (u * 104729 + c.t * 7907) % 60000
JOIN LATERAL (SELECT id FROM core_departments dd WHERE dd.tenant_id = c.t AND dd.code = 'D' || (1 + u % c.depts)) d ON true
JOIN core_positions pos ON pos.department_id = d.id;
INSERT INTO core_users (uuid, tenant_id, username, email, password_hash, full_name, is_infra_admin, created_at, updated_at)
VALUES (md5('platform-admin')::uuid::text, NULL, 'admin', 'admin@example.com', 'x', '平台管理员', true, now(), now()),
       (md5('platform-ops')::uuid::text, NULL, 'ops', 'ops@example.com', 'y', 'Ops', true, now(), now());

-- The core_users <-> core_departments cycle.
UPDATE core_departments d SET manager_id = u.id
FROM core_users u
WHERE u.tenant_id = d.tenant_id AND u.username = 'user' || d.sort_order;

INSERT INTO core_roles (uuid, tenant_id, name, code, description, is_system)
SELECT md5(random()::text)::uuid::text, c.t, '角色 ' || r, 'R' || r, CASE WHEN r % 2 = 0 THEN p.txt END, r = 1
FROM bench_tenant_counts c CROSS JOIN LATERAL generate_series(1, c.roles) r JOIN bench_phrases p ON p.id = 100 + r;
INSERT INTO core_roles (uuid, tenant_id, name, code, is_system)
VALUES (md5('platform-role')::uuid::text, NULL, 'Platform', 'PLATFORM', true);

INSERT INTO core_permissions (uuid, tenant_id, name, code, resource, action, description)
SELECT md5('perm-p' || i)::uuid::text, NULL, 'perm ' || i, 'p.' || i, (ARRAY['order','material','user','report','bom'])[1 + i % 5],
       (ARRAY['read','write','delete','approve'])[1 + i % 4], p.txt
FROM generate_series(1, 200) i JOIN bench_phrases p ON p.id = 1000 + i;
INSERT INTO core_permissions (uuid, tenant_id, name, code, resource, action)
SELECT md5('perm' || c.t || '-' || i)::uuid::text, c.t, 'tenant perm ' || i, 't.' || i, 'custom', 'write'
FROM bench_tenant_counts c CROSS JOIN LATERAL generate_series(1, 2 + c.t % 8) i;

INSERT INTO core_user_roles (user_id, role_id, created_at)
SELECT u.id, r.id, u.created_at
FROM core_users u JOIN bench_tenant_counts c ON c.t = u.tenant_id
JOIN core_roles r ON r.tenant_id = u.tenant_id AND (r.code = 'R' || (1 + u.id % c.roles) OR (u.id % 5 = 0 AND r.code = 'R1'));
INSERT INTO core_user_roles (user_id, role_id)
SELECT u.id, r.id FROM core_users u, core_roles r WHERE u.tenant_id IS NULL AND r.tenant_id IS NULL;

-- Tenant roles get a slice of the platform permissions and their own tenant's permissions.
INSERT INTO core_role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM core_roles r JOIN core_permissions p
    ON (p.tenant_id IS NULL AND (p.id + r.id) % 8 = 0) OR p.tenant_id = r.tenant_id
WHERE r.tenant_id IS NOT NULL;
INSERT INTO core_role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM core_roles r JOIN core_permissions p ON p.tenant_id IS NULL WHERE r.tenant_id IS NULL;

INSERT INTO core_data_dictionaries (uuid, tenant_id, name, code, description, is_system)
SELECT md5(random()::text)::uuid::text, c.t, '字典 ' || p.txt, 'dict' || i, p.txt, i = 1
FROM bench_tenant_counts c CROSS JOIN LATERAL generate_series(1, 5) i JOIN bench_phrases p ON p.id = 2000 + i;
INSERT INTO core_dictionary_items (uuid, tenant_id, dictionary_id, label, value, description, color, sort_order)
SELECT md5(random()::text)::uuid::text, d.tenant_id, d.id, left(p.txt, 100), 'v' || i,
       CASE WHEN random() < 0.3 THEN p.txt END, CASE WHEN i % 2 = 0 THEN '#' || left(md5(random()::text), 6) END, i
FROM core_data_dictionaries d, generate_series(1, 12) i JOIN bench_phrases p ON p.id = 3000 + i;

INSERT INTO apps_master_data_material_groups (uuid, tenant_id, code, name, description)
SELECT md5(random()::text)::uuid::text, c.t, 'G' || g, left('物料组 ' || p.txt, 200), CASE WHEN random() < 0.4 THEN p.txt END
FROM bench_tenant_counts c CROSS JOIN LATERAL generate_series(1, 5 + c.t % 15) g JOIN bench_phrases p ON p.id = 4000 + g;
