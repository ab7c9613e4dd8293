ALTER TABLE servicegroup_members SET (fillfactor = 80);
