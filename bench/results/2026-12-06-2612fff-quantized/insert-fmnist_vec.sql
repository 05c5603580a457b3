INSERT INTO fmnist_vec (id, label, v) SELECT id, label, v FROM fmnist_vec_stage WHERE id = (SELECT nextval('fmnist_vec_stage_seq'));
