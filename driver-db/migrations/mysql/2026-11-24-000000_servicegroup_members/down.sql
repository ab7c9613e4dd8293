DROP TABLE IF EXISTS servicegroup_members;
