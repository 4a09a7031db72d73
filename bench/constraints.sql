-- riveredge-bench generator, part 3 (after the load): sequences, foreign keys (each validated by
-- one scan instead of a trigger per inserted row), clean-up of the generator's helpers.
SET client_min_messages = warning;

SELECT setval(pg_get_serial_sequence(quote_ident(c.table_name), 'id'),
              greatest(1, (xpath('/row/m/text()', query_to_xml(format('SELECT max(id) AS m FROM %I', c.table_name), false, true, '')))[1]::text::bigint))
FROM information_schema.columns c
WHERE c.table_schema = 'public' AND c.column_name = 'id' AND pg_get_serial_sequence(quote_ident(c.table_name), 'id') IS NOT NULL
  AND c.table_name <> 'bench_phrases';

ALTER TABLE core_departments ADD FOREIGN KEY (parent_id) REFERENCES core_departments(id) ON DELETE SET NULL;
ALTER TABLE core_positions ADD FOREIGN KEY (department_id) REFERENCES core_departments(id) ON DELETE SET NULL;
ALTER TABLE core_users ADD FOREIGN KEY (department_id) REFERENCES core_departments(id) ON DELETE SET NULL;
ALTER TABLE core_users ADD FOREIGN KEY (position_id) REFERENCES core_positions(id) ON DELETE SET NULL;
ALTER TABLE core_departments ADD CONSTRAINT core_departments_manager_id_fkey FOREIGN KEY (manager_id) REFERENCES core_users(id) ON DELETE SET NULL;
ALTER TABLE core_user_roles ADD FOREIGN KEY (user_id) REFERENCES core_users(id) ON DELETE CASCADE;
ALTER TABLE core_user_roles ADD FOREIGN KEY (role_id) REFERENCES core_roles(id) ON DELETE CASCADE;
ALTER TABLE core_role_permissions ADD FOREIGN KEY (role_id) REFERENCES core_roles(id) ON DELETE CASCADE;
ALTER TABLE core_role_permissions ADD FOREIGN KEY (permission_id) REFERENCES core_permissions(id) ON DELETE CASCADE;
ALTER TABLE core_dictionary_items ADD FOREIGN KEY (dictionary_id) REFERENCES core_data_dictionaries(id) ON DELETE CASCADE;
ALTER TABLE apps_master_data_materials ADD FOREIGN KEY (group_id) REFERENCES apps_master_data_material_groups(id) ON DELETE SET NULL;
ALTER TABLE apps_master_data_bom ADD FOREIGN KEY (material_id) REFERENCES apps_master_data_materials(id) ON DELETE RESTRICT;
ALTER TABLE apps_master_data_bom ADD FOREIGN KEY (component_id) REFERENCES apps_master_data_materials(id) ON DELETE RESTRICT;
ALTER TABLE apps_kuaizhizao_work_orders ADD FOREIGN KEY (sales_order_id) REFERENCES apps_kuaizhizao_sales_orders(id) ON DELETE SET NULL;
ALTER TABLE apps_kuaizhizao_sales_order_items ADD FOREIGN KEY (sales_order_id) REFERENCES apps_kuaizhizao_sales_orders(id) ON DELETE CASCADE;
ALTER TABLE apps_kuaizhizao_sales_order_items ADD FOREIGN KEY (work_order_id) REFERENCES apps_kuaizhizao_work_orders(id) ON DELETE SET NULL;
ALTER TABLE apps_kuaizhizao_work_orders ADD CONSTRAINT apps_kuaizhizao_work_orders_sales_order_item_id_fkey
    FOREIGN KEY (sales_order_item_id) REFERENCES apps_kuaizhizao_sales_order_items(id) ON DELETE SET NULL;

DROP TABLE bench_phrases;
DROP FUNCTION bench_tenant(bigint, int);
DROP FUNCTION bench_share(int, int);
DROP FUNCTION bench_u(bigint);
