-- riveredge-bench: the RiverEdge-shaped schema for the benchmark data set (riveredge.md §3,
-- the same shape as tests/fixtures/riveredge.sql, at scale).
--
-- Created without foreign keys; bench/constraints.sql adds them after the load (one validating
-- scan per key instead of a trigger per row). Primary keys, tenant_id indexes and the partial
-- uniques exist during the load, so the size the generator measures while loading includes them.
SET client_min_messages = warning;

CREATE TABLE infra_tenants (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    name VARCHAR(200) NOT NULL,
    domain VARCHAR(200) NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'inactive',
    plan VARCHAR(20) NOT NULL DEFAULT 'basic',
    settings JSONB NOT NULL DEFAULT '{}',
    max_users INTEGER DEFAULT 10,
    max_storage INTEGER DEFAULT 1024,
    expires_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE infra_platform_settings (
    id SERIAL PRIMARY KEY,
    key VARCHAR(100) NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE aerich (
    id SERIAL PRIMARY KEY,
    version VARCHAR(255) NOT NULL,
    app VARCHAR(100) NOT NULL,
    content JSONB NOT NULL
);

CREATE TABLE core_departments (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    name VARCHAR(100) NOT NULL,
    code VARCHAR(50),
    description TEXT,
    manager_id INTEGER,
    parent_id INTEGER,
    sort_order INTEGER NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    updated_at TIMESTAMP NOT NULL DEFAULT now(),
    deleted_at TIMESTAMP
);

CREATE TABLE core_positions (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    name VARCHAR(100) NOT NULL,
    code VARCHAR(50),
    description TEXT,
    department_id INTEGER,
    sort_order INTEGER NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    updated_at TIMESTAMP NOT NULL DEFAULT now(),
    deleted_at TIMESTAMP
);

CREATE TABLE core_users (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    username VARCHAR(50) NOT NULL,
    email VARCHAR(255),
    password_hash VARCHAR(255) NOT NULL,
    full_name VARCHAR(100),
    is_active BOOLEAN NOT NULL DEFAULT true,
    is_infra_admin BOOLEAN NOT NULL DEFAULT false,
    is_tenant_admin BOOLEAN NOT NULL DEFAULT false,
    source VARCHAR(50),
    last_login TIMESTAMPTZ,
    department_id INTEGER,
    position_id INTEGER,
    phone VARCHAR(20),
    avatar VARCHAR(36),
    remark TEXT,
    bio TEXT,
    contact_info JSONB,
    gender VARCHAR(10),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX uq_core_users_tenant_username ON core_users (tenant_id, username);

CREATE TABLE core_roles (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    name VARCHAR(100) NOT NULL,
    code VARCHAR(50) NOT NULL,
    description TEXT,
    is_system BOOLEAN NOT NULL DEFAULT false,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX uq_core_roles_code ON core_roles (tenant_id, code) WHERE deleted_at IS NULL;

CREATE TABLE core_permissions (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    name VARCHAR(100),
    code VARCHAR(100),
    resource VARCHAR(100),
    action VARCHAR(50) NOT NULL,
    description TEXT,
    permission_type VARCHAR(20) NOT NULL DEFAULT 'function',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);

-- Join tables without tenant_id: they reach a tenant only through their foreign keys.
CREATE TABLE core_user_roles (
    id SERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL,
    role_id INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE core_role_permissions (
    id SERIAL PRIMARY KEY,
    role_id INTEGER NOT NULL,
    permission_id INTEGER NOT NULL
);

CREATE TABLE core_data_dictionaries (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    name VARCHAR(100) NOT NULL,
    code VARCHAR(50) NOT NULL,
    description TEXT,
    is_system BOOLEAN NOT NULL DEFAULT false,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);

CREATE TABLE core_dictionary_items (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    dictionary_id INTEGER NOT NULL,
    label VARCHAR(100) NOT NULL,
    value VARCHAR(100) NOT NULL,
    description TEXT,
    color VARCHAR(20),
    icon VARCHAR(50),
    sort_order INTEGER NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);

CREATE TABLE core_operation_logs (
    id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    operation_type VARCHAR(50) NOT NULL,
    operation_module VARCHAR(100),
    operation_object_type VARCHAR(100),
    operation_object_id INTEGER,
    operation_content TEXT,
    ip_address VARCHAR(45),
    user_agent VARCHAR(500),
    request_method VARCHAR(10),
    request_path VARCHAR(500),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_operation_logs_tenant ON core_operation_logs (tenant_id);

CREATE TABLE apps_master_data_material_groups (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER NOT NULL,
    code VARCHAR(50) NOT NULL,
    name VARCHAR(200) NOT NULL,
    parent_id INTEGER,
    description TEXT,
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX uq_material_groups_code ON apps_master_data_material_groups (tenant_id, code) WHERE deleted_at IS NULL;

CREATE TABLE apps_master_data_materials (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER NOT NULL,
    code VARCHAR(50),
    main_code VARCHAR(50) NOT NULL,
    name VARCHAR(200) NOT NULL,
    group_id INTEGER,
    specification TEXT,
    base_unit VARCHAR(20) NOT NULL,
    units JSONB,
    batch_managed BOOLEAN NOT NULL DEFAULT false,
    variant_attributes JSONB,
    material_type VARCHAR(20) NOT NULL DEFAULT 'RAW',
    defaults JSONB,
    images JSONB,
    description TEXT,
    brand VARCHAR(100),
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX uq_materials_code ON apps_master_data_materials (tenant_id, code) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX uq_materials_main_code ON apps_master_data_materials (tenant_id, main_code) WHERE deleted_at IS NULL;

CREATE TABLE apps_master_data_bom (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER NOT NULL,
    material_id INTEGER NOT NULL,
    component_id INTEGER NOT NULL,
    quantity NUMERIC(18,4) NOT NULL,
    unit VARCHAR(20) NOT NULL,
    version VARCHAR(20) NOT NULL DEFAULT '1.0',
    approval_status VARCHAR(20) NOT NULL DEFAULT 'draft',
    waste_rate NUMERIC(5,2),
    is_default BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);
CREATE INDEX idx_bom_tenant ON apps_master_data_bom (tenant_id);

CREATE TABLE apps_master_data_customers (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER NOT NULL,
    code VARCHAR(50) NOT NULL,
    name VARCHAR(200) NOT NULL,
    short_name VARCHAR(100),
    contact_person VARCHAR(100),
    phone VARCHAR(30),
    email VARCHAR(255),
    address TEXT,
    category VARCHAR(50),
    is_active BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX uq_customers_code ON apps_master_data_customers (tenant_id, code) WHERE deleted_at IS NULL;

CREATE TABLE apps_kuaizhizao_sales_orders (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER NOT NULL,
    order_code VARCHAR(50) NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL,
    customer_name VARCHAR(200),
    order_date DATE,
    delivery_date DATE,
    order_type VARCHAR(20) NOT NULL DEFAULT 'MTO',
    total_quantity NUMERIC(10,2),
    total_amount NUMERIC(12,2),
    status VARCHAR(20) NOT NULL DEFAULT '草稿',
    review_status VARCHAR(20) NOT NULL DEFAULT '待审核',
    remark TEXT,
    attachments JSONB,
    discount_amount NUMERIC(12,2),
    created_by INTEGER,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    deleted_at TIMESTAMPTZ
);
CREATE INDEX idx_orders_tenant ON apps_kuaizhizao_sales_orders (tenant_id);
CREATE INDEX idx_orders_updated_at ON apps_kuaizhizao_sales_orders (updated_at);

CREATE TABLE apps_kuaizhizao_work_orders (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER,
    code VARCHAR(50) NOT NULL,
    product_id INTEGER,
    quantity NUMERIC(12,2),
    production_mode VARCHAR(20) NOT NULL DEFAULT 'MTS',
    sales_order_id INTEGER,
    sales_order_item_id INTEGER,
    status VARCHAR(20) NOT NULL DEFAULT 'draft',
    priority VARCHAR(20) NOT NULL DEFAULT 'normal',
    created_by INTEGER NOT NULL,
    created_by_name VARCHAR(100) NOT NULL,
    attachments JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    deleted_at TIMESTAMPTZ
);
CREATE INDEX idx_work_orders_tenant ON apps_kuaizhizao_work_orders (tenant_id);

CREATE TABLE apps_kuaizhizao_sales_order_items (
    id SERIAL PRIMARY KEY,
    uuid VARCHAR(36) NOT NULL,
    tenant_id INTEGER NOT NULL,
    sales_order_id INTEGER NOT NULL,
    material_id INTEGER NOT NULL,
    quantity NUMERIC(10,2) NOT NULL,
    unit_price NUMERIC(12,2),
    total_amount NUMERIC(12,2),
    delivery_date DATE,
    work_order_id INTEGER,
    tax_rate NUMERIC(6,2),
    remark TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_items_tenant ON apps_kuaizhizao_sales_order_items (tenant_id);
CREATE INDEX idx_items_order ON apps_kuaizhizao_sales_order_items (sales_order_id);

-- Text pools for the generator (dropped at the end of generation): phrases of 1..12 words,
-- Chinese or English, so text columns vary in length and content without being uniform filler.
CREATE UNLOGGED TABLE bench_phrases (id INTEGER PRIMARY KEY, txt TEXT NOT NULL);
