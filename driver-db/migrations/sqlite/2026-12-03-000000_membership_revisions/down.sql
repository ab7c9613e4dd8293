DROP TABLE IF EXISTS servicegroup_revisions;
